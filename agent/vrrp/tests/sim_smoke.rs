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
