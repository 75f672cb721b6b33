//! The coordinator keeps a real BIND 9 in step with VIP ownership: a group's layout comes from
//! the fleet file pushed, ownership from the agents' reports over mTLS, and the record set is
//! checked with `dig`. A failover keeps every held VIP published, a whole group down leaves the
//! records as they were, and drift made with `nsupdate` is reported and repaired.

#![allow(clippy::unwrap_used)]

mod bind;
mod support;

use std::time::Duration;

use hav_agent::control::LinkState;
use hav_coordinator::CoordinatorConfig;
use hav_coordinator::orchestrate::DnsSettings;
use hav_proto::identity::Role;
use hav_proto::v1::{
    DnsShowRequest, Event, InstanceState, PushConfigRequest, SlaRequest, StateSnapshot, Transition,
    VrrpState, event,
};
use havctl::client;
use support::{Pki, TIMEOUT, await_link};

const FLEET: &str = r#"
[[group]]
name = "web"
interface = "eth0"
vips = ["198.51.100.100/24", "198.51.100.101/24"]
first_vrid = 10
dns_name = "web.example.test"
[[group.node]]
name = "proxy-a"
address = "198.51.100.11"
[[group.node]]
name = "proxy-b"
address = "198.51.100.12"
"#;

fn holding(vips: &[&str]) -> StateSnapshot {
    reporting(vips, VrrpState::Master, hav_coordinator::unix_ms())
}

/// Every VIP of `vips` on an instance of its own in `state`, stamped `unix_ms`.
fn reporting(vips: &[&str], state: VrrpState, unix_ms: u64) -> StateSnapshot {
    StateSnapshot {
        config_version: 1,
        instances: vips
            .iter()
            .enumerate()
            .map(|(i, vip)| InstanceState {
                name: format!("vip-{i}"),
                vrid: 10 + i as u32,
                state: state as i32,
                effective_priority: 150,
                configured_priority: 150,
                vips_held: vec![vip.to_string()],
                interface: "eth0".into(),
                priority_override: None,
                advert_interval_ms: 0,
                draining_connections: None,
            })
            .collect(),
        drained: false,
        unix_ms,
    }
}

/// Waits until `dig` answers `want` (the coordinator updates the DNS asynchronously, and the
/// DNS server has no change notification we could await).
fn await_dig(bind: &bind::Bind, want: &[&str]) {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let got = bind.dig("web.example.test");
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dig says {got:?}, want {want:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_follow_ownership_and_drift_is_repaired() {
    let bind = bind::Bind::start();
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        pki.server_files(),
        data.path().to_owned(),
    );
    config.command_timeout = Duration::from_millis(300);
    config.orchestration.dns = Some(DnsSettings {
        server: bind.address,
        zone: bind::ZONE.into(),
        key_file: bind.key_file.clone(),
        ttl: 30,
    });
    let coordinator = hav_coordinator::start(config).await.unwrap();
    let operator = pki.operator(&coordinator, "ana", Role::Operator);
    let mut fleet = client::connect(&operator).await.unwrap();
    fleet
        .push_config(PushConfigRequest {
            fleet: FLEET.into(),
            fleet_name: "fleet.toml".into(),
            comment: "web pair".into(),
            ..PushConfigRequest::default()
        })
        .await
        .unwrap();

    let mut a = pki.agent(&coordinator, "proxy-a", "proxy-a");
    let mut b = pki.agent(&coordinator, "proxy-b", "proxy-b");
    await_link(&mut a, |s| *s == LinkState::Connected).await;
    await_link(&mut b, |s| *s == LinkState::Connected).await;

    // The balanced layout: each node masters one VIP; both are published.
    a.snapshots.send_replace(holding(&["198.51.100.100/24"]));
    b.snapshots.send_replace(holding(&["198.51.100.101/24"]));
    await_dig(&bind, &["198.51.100.100", "198.51.100.101"]);

    // proxy-b fails, proxy-a takes .101: the DNS keeps both.
    b.snapshots.send_replace(holding(&[]));
    a.snapshots
        .send_replace(holding(&["198.51.100.100/24", "198.51.100.101/24"]));
    await_dig(&bind, &["198.51.100.100", "198.51.100.101"]);

    // Only .100 held: .101 is withdrawn.
    a.snapshots.send_replace(holding(&["198.51.100.100/24"]));
    await_dig(&bind, &["198.51.100.100"]);

    // The whole group down: the last record stays.
    a.snapshots.send_replace(holding(&[]));
    let deadline = std::time::Instant::now() + TIMEOUT;
    let web = loop {
        let show = fleet
            .dns_show(DnsShowRequest { repair: false })
            .await
            .unwrap()
            .into_inner();
        let web = show.records[0].clone();
        if web.held.is_empty() || std::time::Instant::now() > deadline {
            break web;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(web.keep_as_is && web.held.is_empty(), "{web:?}");
    assert_eq!(bind.dig("web.example.test"), ["198.51.100.100"]);

    // Back up, then drift behind our back: reported, then repaired.
    a.snapshots
        .send_replace(holding(&["198.51.100.100/24", "198.51.100.101/24"]));
    await_dig(&bind, &["198.51.100.100", "198.51.100.101"]);
    bind.nsupdate("update add web.example.test. 30 A 203.0.113.66");
    let show = fleet
        .dns_show(DnsShowRequest { repair: false })
        .await
        .unwrap()
        .into_inner();
    assert!(
        show.records[0].drift && !show.records[0].repaired,
        "{:?}",
        show.records[0]
    );
    assert_eq!(
        show.records[0].published,
        ["198.51.100.100", "198.51.100.101", "203.0.113.66"]
    );
    let show = fleet
        .dns_show(DnsShowRequest { repair: true })
        .await
        .unwrap()
        .into_inner();
    assert!(show.records[0].repaired);
    assert_eq!(
        bind.dig("web.example.test"),
        ["198.51.100.100", "198.51.100.101"]
    );
    drop((a, b));
    coordinator.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resigning_master_keeps_its_vip_published_and_counted_until_it_releases_it() {
    let bind = bind::Bind::start();
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = CoordinatorConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        pki.server_files(),
        data.path().to_owned(),
    );
    config.command_timeout = Duration::from_millis(300);
    config.orchestration.dns = Some(DnsSettings {
        server: bind.address,
        zone: bind::ZONE.into(),
        key_file: bind.key_file.clone(),
        ttl: 30,
    });
    let coordinator = hav_coordinator::start(config).await.unwrap();
    let operator = pki.operator(&coordinator, "ana", Role::Operator);
    let mut fleet = client::connect(&operator).await.unwrap();
    fleet
        .push_config(PushConfigRequest {
            fleet: FLEET.into(),
            fleet_name: "fleet.toml".into(),
            ..PushConfigRequest::default()
        })
        .await
        .unwrap();
    let mut a = pki.agent(&coordinator, "proxy-a", "proxy-a");
    let mut b = pki.agent(&coordinator, "proxy-b", "proxy-b");
    await_link(&mut a, |s| *s == LinkState::Connected).await;
    await_link(&mut b, |s| *s == LinkState::Connected).await;
    a.snapshots.send_replace(holding(&["198.51.100.100/24"]));
    b.snapshots.send_replace(holding(&["198.51.100.101/24"]));
    await_dig(&bind, &["198.51.100.100", "198.51.100.101"]);

    // Drift behind the coordinator's back, which only a reconcile repairs.
    bind.nsupdate("update add web.example.test. 30 A 203.0.113.66");
    // proxy-a resigns make-before-break: Backup at once, its VIP kept until it hears proxy-b.
    let resigned = hav_coordinator::unix_ms();
    a.snapshots.send_replace(reporting(
        &["198.51.100.100/24"],
        VrrpState::Backup,
        resigned,
    ));
    a.events.send(Event {
        unix_ms: resigned,
        kind: Some(event::Kind::Transition(Transition {
            instance: "vip-0".into(),
            from: VrrpState::Master as i32,
            to: VrrpState::Backup as i32,
            cause: "priority 1 fell below peer".into(),
        })),
    });
    // The transition reconciles at once, and the VIP still held stays published.
    await_dig(&bind, &["198.51.100.100", "198.51.100.101"]);

    // proxy-b takes .100 over 41 ms later; proxy-a, hearing it, releases it.
    b.snapshots.send_replace(reporting(
        &["198.51.100.100/24", "198.51.100.101/24"],
        VrrpState::Master,
        resigned + 41,
    ));
    a.snapshots
        .send_replace(reporting(&[], VrrpState::Backup, resigned + 50));
    let deadline = std::time::Instant::now() + TIMEOUT;
    let vip = loop {
        let report = fleet.sla(SlaRequest::default()).await.unwrap().into_inner();
        let vip = report
            .vips
            .into_iter()
            .find(|v| v.name == "198.51.100.100")
            .expect("the VIP is accounted");
        if vip.failovers == 1 || std::time::Instant::now() > deadline {
            break vip;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Held throughout: the handover is no outage.
    assert_eq!((vip.failovers, vip.no_holder_ms), (1, 0), "{vip:?}");
    await_dig(&bind, &["198.51.100.100", "198.51.100.101"]);
    drop((a, b));
    coordinator.shutdown().await.unwrap();
}
