//! Cost of the state machine: one backup handling a master's advert (decode, checks, timer
//! reset), and a simulated LAN of five routers running a minute of virtual time (elections,
//! adverts, a graceful shutdown). Criterion reports time per iteration.
//!
//! Run: `cargo bench -p hav-vrrp --bench engine -- --warm-up-time 1 --measurement-time 2`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use hav_vrrp::engine::{Engine, EngineConfig, multicast_address};
use hav_vrrp::sim::{Sim, node_address, router};
use hav_vrrp::wire::{Advertisement, RecvMeta};
use hav_vrrp::{Family, Priority, Version};

fn backup_handles_an_advert(c: &mut Criterion) {
    let config = router("vr", 1, Version::V3, Family::V4, 0, 100, 100);
    let advert = Advertisement {
        version: config.version,
        vrid: config.vrid,
        priority: Priority(150),
        interval: config.advert_interval,
        addresses: config.vips.clone(),
        auth: config.auth,
    };
    let src = node_address(Family::V4, 1);
    let dst = multicast_address(Family::V4);
    let payload = advert.to_bytes(src, dst, Default::default());
    let meta = RecvMeta {
        src,
        dst,
        hop_limit: 255,
    };
    let mut sim = Sim::new(0, Vec::new());
    let mut engine = Engine::new(EngineConfig {
        routers: vec![config],
        sync_groups: vec![],
    })
    .expect("valid config");
    engine.start(sim.now);
    while engine.poll_action().is_some() {}
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    group.bench_function("backup_handles_advert", |b| {
        b.iter(|| {
            sim.now += Duration::from_secs(1);
            engine.handle_packet(
                sim.now,
                hav_vrrp::sim::INTERFACE,
                black_box(&meta),
                black_box(&payload),
            );
            black_box(engine.poll_action());
        })
    });
    group.finish();
}

fn five_routers_for_a_minute(c: &mut Criterion) {
    let configs: Vec<(String, EngineConfig)> = (0..5u8)
        .map(|n| {
            let config = router("vr", 1, Version::V3, Family::V4, n, 100 + n * 10, 100);
            (
                format!("n{n}"),
                EngineConfig {
                    routers: vec![config],
                    sync_groups: vec![],
                },
            )
        })
        .collect();
    let mut group = c.benchmark_group("sim");
    group.bench_function("five_routers_one_minute", |b| {
        b.iter(|| {
            let mut sim = Sim::new(1, configs.clone());
            sim.start_all();
            sim.run_for(Duration::from_secs(30));
            sim.shutdown(4);
            sim.run_for(Duration::from_secs(30));
            black_box(sim.delivered)
        })
    });
    group.finish();
}

criterion_group!(benches, backup_handles_an_advert, five_routers_for_a_minute);
criterion_main!(benches);
