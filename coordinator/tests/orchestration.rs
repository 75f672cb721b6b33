//! Orchestration over the real control plane: a coordinator on mTLS, the real agent control
//! client for each node, and a small VRRP-like driver behind each link (the highest effective
//! priority masters each VRID, as preemption converges). Checks the SLA figures of an injected
//! outage (and that they survive a coordinator restart), split-brain detection and resolution,
//! and a make-before-break drain/undrain through the API with its audit entries.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hav_agent::control::{Command, DaemonSide, LinkState};
use hav_proto::identity::Role;
use hav_proto::v1::{
    DrainRequest, HistoryRequest, InstanceState, SlaRequest, StateSnapshot, VrrpState,
    WatchEventsRequest, fleet_event,
};
use havctl::client;
use support::{Pki, TIMEOUT, await_link, start};

/// 2026-10-01T00:00:00Z.
const OCT_START: u64 = 1_790_812_800_000;
const MINUTE: u64 = 60_000;

fn snapshot(unix_ms: u64, instances: Vec<InstanceState>) -> StateSnapshot {
    StateSnapshot {
        config_version: 1,
        instances,
        drained: false,
        unix_ms,
    }
}

fn instance(vrid: u32, master: bool, priority: u32, vip: &str) -> InstanceState {
    InstanceState {
        name: format!("vip-{vrid}"),
        vrid,
        state: if master {
            VrrpState::Master
        } else {
            VrrpState::Backup
        } as i32,
        effective_priority: priority,
        configured_priority: priority,
        vips_held: if master { vec![vip.to_owned()] } else { vec![] },
        interface: "eth0".into(),
        priority_override: None,
        advert_interval_ms: 0,
        draining_connections: None,
    }
}

#[tokio::test]
async fn an_injected_outage_gives_exact_sla_figures_that_survive_a_restart() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut lb1 = pki.agent(&coordinator, "lb-1", "lb-1");
    let mut lb2 = pki.agent(&coordinator, "lb-2", "lb-2");
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    await_link(&mut lb2, |s| *s == LinkState::Connected).await;
    let vip = "198.51.100.10/24";
    let mut fleet = client::connect(&viewer).await.unwrap();

    // The agents' own clocks stamp the reports: lb-1 holds the VIP from October 1st; on the
    // 10th it fails and for 44 min 38.4 s nobody holds it, then lb-2 takes over.
    let outage = 44 * MINUTE + 38_400;
    let fail = OCT_START + 9 * 86_400_000;
    // Each report is awaited in the figures before the next is sent, so the order is fixed.
    lb1.snapshots
        .send_replace(snapshot(OCT_START, vec![instance(10, true, 150, vip)]));
    wait_for(&mut fleet, |r| {
        r.vips.first().is_some_and(|v| v.one_holder_ms > 0)
    })
    .await;
    lb2.snapshots
        .send_replace(snapshot(OCT_START, vec![instance(10, false, 140, vip)]));
    lb1.snapshots
        .send_replace(snapshot(fail, vec![instance(10, false, 150, vip)]));
    wait_for(&mut fleet, |r| {
        r.vips.first().is_some_and(|v| v.no_holder_ms > 0)
    })
    .await;
    lb2.snapshots
        .send_replace(snapshot(fail + outage, vec![instance(10, true, 140, vip)]));
    let expected_no_holder = outage;
    let report = wait_for(&mut fleet, |r| {
        r.vips
            .first()
            .is_some_and(|v| v.no_holder_ms == expected_no_holder && v.failovers == 1)
    })
    .await;
    let v = &report.vips[0];
    assert_eq!(v.name, "198.51.100.10");
    assert_eq!(v.period_ms, 31 * 86_400_000);
    assert_eq!(v.split_brain_ms, 0);
    // 44.64 of 44 640 minutes: exactly 99.9 %.
    assert!(
        (v.availability_percent - 99.9).abs() < 1e-9,
        "{}",
        v.availability_percent
    );

    drop(lb1);
    drop(lb2);
    coordinator.shutdown().await.unwrap();
    let coordinator = start(&pki, data.path()).await;
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let again = fleet
        .sla(SlaRequest {
            month: "2026-10".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.vips, report.vips, "the ledgers were persisted");
    let bad = fleet
        .sla(SlaRequest {
            month: "2026-13".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);
}

async fn wait_for(
    fleet: &mut hav_proto::v1::fleet_service_client::FleetServiceClient<tonic::transport::Channel>,
    done: impl Fn(&hav_proto::v1::SlaResponse) -> bool,
) -> hav_proto::v1::SlaResponse {
    // The SLA is a read model fed asynchronously; poll the API (bounded) until it shows the
    // report. There is no event for "the ledger was updated" on the API.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let report = fleet
            .sla(SlaRequest {
                month: "2026-10".into(),
            })
            .await
            .unwrap()
            .into_inner();
        if done(&report) {
            return report;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SLA not as expected: {report:?}"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A tiny VRRP model behind real agent links: per VRID the highest effective priority masters.
struct Model {
    /// node → vrid → configured priority.
    configured: BTreeMap<String, BTreeMap<u32, u32>>,
    overrides: BTreeMap<(String, u32), u32>,
    drained: BTreeMap<String, bool>,
    vips: BTreeMap<u32, String>,
}

impl Model {
    fn effective(&self, node: &str, vrid: u32) -> u32 {
        if let Some(p) = self.overrides.get(&(node.to_owned(), vrid)) {
            *p
        } else if self.drained.get(node).copied().unwrap_or(false) {
            1
        } else {
            self.configured[node][&vrid]
        }
    }

    fn snapshot(&self, node: &str) -> StateSnapshot {
        let instances = self.configured[node]
            .keys()
            .map(|&vrid| {
                let master = self
                    .configured
                    .keys()
                    .max_by_key(|n| (self.effective(n, vrid), (*n).clone()))
                    .is_some_and(|m| m == node);
                let mut i = instance(vrid, master, self.effective(node, vrid), &self.vips[&vrid]);
                i.configured_priority = self.configured[node][&vrid];
                i
            })
            .collect();
        snapshot(crate_unix_ms(), instances)
    }
}

fn crate_unix_ms() -> u64 {
    hav_coordinator::unix_ms()
}

/// Runs the driver of every node: applies commands to the model and republishes all snapshots.
fn drive(
    model: Arc<Mutex<Model>>,
    sides: Vec<(String, DaemonSide)>,
) -> Vec<tokio::task::JoinHandle<()>> {
    drive_gated(model, sides, Arc::new(tokio::sync::Semaphore::new(1_000)))
}

/// As [`drive`], and an `Exec` waits for a permit of `gate` before it succeeds.
fn drive_gated(
    model: Arc<Mutex<Model>>,
    sides: Vec<(String, DaemonSide)>,
    gate: Arc<tokio::sync::Semaphore>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let senders: Vec<(String, tokio::sync::watch::Sender<StateSnapshot>)> = sides
        .iter()
        .map(|(n, s)| (n.clone(), s.snapshots.clone()))
        .collect();
    let publish = {
        let model = model.clone();
        let senders = senders.clone();
        move || {
            let m = model.lock().unwrap();
            for (node, tx) in &senders {
                tx.send_replace(m.snapshot(node));
            }
        }
    };
    publish();
    sides
        .into_iter()
        .map(|(node, mut side)| {
            let model = model.clone();
            let publish = publish.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                while let Some(command) = side.commands.recv().await {
                    if let Command::Exec(_) = &command.command {
                        let gate = gate.clone();
                        tokio::spawn(async move {
                            let _permit = gate.acquire().await;
                            command.ack(Ok::<(), String>(()));
                        });
                        continue;
                    }
                    let vrid = |instance: &str| {
                        instance.trim_start_matches("vip-").parse::<u32>().unwrap()
                    };
                    {
                        let mut m = model.lock().unwrap();
                        match &command.command {
                            Command::SetPriorityOverride {
                                instance, priority, ..
                            } => {
                                m.overrides.insert(
                                    (node.clone(), vrid(instance)),
                                    u32::from(priority.get()),
                                );
                            }
                            Command::ClearOverride { instance } => {
                                m.overrides.remove(&(node.clone(), vrid(instance)));
                            }
                            Command::Drain => {
                                m.drained.insert(node.clone(), true);
                            }
                            Command::Undrain => {
                                m.drained.insert(node.clone(), false);
                            }
                            _ => {}
                        }
                    }
                    publish();
                    command.ack(Ok::<(), String>(()));
                }
                drop(side);
            })
        })
        .collect()
}

#[tokio::test]
async fn drain_and_undrain_through_the_api_move_vips_make_before_break_and_are_audited() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let operator = pki.operator(&coordinator, "ana", Role::Operator);
    let mut lb1 = pki.agent(&coordinator, "lb-1", "lb-1");
    let mut lb2 = pki.agent(&coordinator, "lb-2", "lb-2");
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    await_link(&mut lb2, |s| *s == LinkState::Connected).await;
    let model = Arc::new(Mutex::new(Model {
        configured: BTreeMap::from([
            ("lb-1".into(), BTreeMap::from([(10, 150), (11, 140)])),
            ("lb-2".into(), BTreeMap::from([(10, 140), (11, 150)])),
        ]),
        overrides: BTreeMap::new(),
        drained: BTreeMap::new(),
        vips: BTreeMap::from([
            (10, "198.51.100.10/24".into()),
            (11, "198.51.100.11/24".into()),
        ]),
    }));
    let _drivers = drive(
        model.clone(),
        vec![("lb-1".into(), lb1), ("lb-2".into(), lb2)],
    );
    let mut fleet = client::connect(&operator).await.unwrap();
    // Wait until the coordinator has both snapshots (a drain checks them).
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let nodes = fleet
            .list_nodes(hav_proto::v1::ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes;
        if nodes
            .iter()
            .filter(|n| n.snapshot.as_ref().is_some_and(|s| !s.instances.is_empty()))
            .count()
            == 2
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "snapshots not in");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    let response = fleet
        .drain(DrainRequest {
            node: "lb-1".into(),
            undrain: false,
            reason: "kernel upgrade".into(),
            ttl_seconds: 600,
            ..DrainRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.ok, "{}", response.error);
    assert_eq!(response.moved, vec!["198.51.100.10/24 -> lb-2"]);
    {
        let m = model.lock().unwrap();
        assert_eq!(
            m.overrides.get(&("lb-2".into(), 10)),
            Some(&254),
            "peer raised first"
        );
        assert_eq!(m.drained.get("lb-1"), Some(&true));
        assert!(
            m.snapshot("lb-1")
                .instances
                .iter()
                .all(|i| i.vips_held.is_empty())
        );
        assert_eq!(
            m.snapshot("lb-2")
                .instances
                .iter()
                .filter(|i| !i.vips_held.is_empty())
                .count(),
            2
        );
    }

    let response = fleet
        .drain(DrainRequest {
            node: "lb-1".into(),
            undrain: true,
            reason: "done".into(),
            ttl_seconds: 0,
            ..DrainRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(response.ok, "{}", response.error);
    {
        let m = model.lock().unwrap();
        assert!(m.overrides.is_empty(), "takeover override cleared");
        assert_eq!(
            m.snapshot("lb-1").instances[0].vips_held,
            vec!["198.51.100.10/24"],
            "layout restored"
        );
    }

    let history = fleet
        .history(HistoryRequest { limit: 50 })
        .await
        .unwrap()
        .into_inner();
    let drains: Vec<_> = history
        .audit
        .iter()
        .filter(|a| a.action == "drain" || a.action == "undrain")
        .collect();
    assert_eq!(drains.len(), 2);
    assert!(drains.iter().any(|a| a.who == "ana"
        && a.detail.contains("kernel upgrade")
        && a.detail.contains("ttl 600s")));
}

#[tokio::test]
async fn two_masters_of_one_vip_are_raised_as_a_split_brain_event() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let mut events = fleet
        .watch_events(WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut lb1 = pki.agent(&coordinator, "lb-1", "lb-1");
    let mut lb2 = pki.agent(&coordinator, "lb-2", "lb-2");
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    await_link(&mut lb2, |s| *s == LinkState::Connected).await;
    let vip = "198.51.100.10/24";
    lb1.snapshots
        .send_replace(snapshot(1, vec![instance(10, true, 150, vip)]));
    lb2.snapshots
        .send_replace(snapshot(2, vec![instance(10, true, 140, vip)]));
    let split = tokio::time::timeout(TIMEOUT, async {
        loop {
            let event = events.message().await.unwrap().unwrap();
            if let Some(fleet_event::Kind::SplitBrain(split)) = event.kind {
                return split;
            }
        }
    })
    .await
    .expect("split brain raised");
    assert_eq!(split.vip, "198.51.100.10");
    assert_eq!(split.vrid, 10);
    assert_eq!(split.masters, vec!["lb-1", "lb-2"]);
    assert!(!split.resolved);
    assert!(split.action.is_empty(), "resolution is off by default");

    lb2.snapshots
        .send_replace(snapshot(3, vec![instance(10, false, 140, vip)]));
    let over = tokio::time::timeout(TIMEOUT, async {
        loop {
            let event = events.message().await.unwrap().unwrap();
            if let Some(fleet_event::Kind::SplitBrain(split)) = event.kind {
                return split;
            }
        }
    })
    .await
    .expect("split brain cleared");
    assert!(over.resolved);
}

#[tokio::test]
async fn with_resolution_enabled_the_lower_priority_master_is_demoted() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut config = hav_coordinator::CoordinatorConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        pki.server_files(),
        data.path().to_owned(),
    );
    config.orchestration.resolve_split_brain = true;
    let coordinator = hav_coordinator::start(config).await.unwrap();
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let mut events = fleet
        .watch_events(WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut lb1 = pki.agent(&coordinator, "lb-1", "lb-1");
    let mut lb2 = pki.agent(&coordinator, "lb-2", "lb-2");
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    await_link(&mut lb2, |s| *s == LinkState::Connected).await;
    let vip = "198.51.100.10/24";
    lb1.snapshots
        .send_replace(snapshot(1, vec![instance(10, true, 150, vip)]));
    lb2.snapshots
        .send_replace(snapshot(2, vec![instance(10, true, 140, vip)]));
    // lb-2 (priority 140) is told to step down: a priority override of 1 on its instance.
    let command = tokio::time::timeout(TIMEOUT, lb2.commands.recv())
        .await
        .expect("a command in time")
        .expect("link open");
    let Command::SetPriorityOverride {
        instance,
        priority,
        ttl,
    } = &command.command
    else {
        panic!("expected a priority override, got {:?}", command.command);
    };
    assert_eq!(instance, "vip-10");
    assert_eq!(priority.get(), 1);
    assert!(ttl.is_some());
    command.ack(Ok::<(), String>(()));
    let split = tokio::time::timeout(TIMEOUT, async {
        loop {
            let event = events.message().await.unwrap().unwrap();
            if let Some(fleet_event::Kind::SplitBrain(split)) = event.kind {
                return split;
            }
        }
    })
    .await
    .expect("split brain raised");
    assert!(
        split.action.contains("lb-2 vip-10 (140): demoted"),
        "{}",
        split.action
    );
    assert!(lb1.commands.try_recv().is_err(), "the winner is left alone");
}

const WEB_FLEET: &str = r#"
[[group]]
name = "web"
interface = "eth0"
vips = ["198.51.100.10/24", "198.51.100.11/24"]
first_vrid = 10
[[group.node]]
name = "lb-1"
address = "198.51.100.1"
[[group.node]]
name = "lb-2"
address = "198.51.100.2"
"#;

async fn await_job(
    fleet: &mut hav_proto::v1::fleet_service_client::FleetServiceClient<tonic::transport::Channel>,
    id: u64,
    want: impl Fn(&hav_proto::v1::RolloutJob) -> bool,
) -> hav_proto::v1::RolloutJob {
    let mut updates = fleet
        .watch_rollout(hav_proto::v1::ControlRolloutRequest { job: id, action: 0 })
        .await
        .unwrap()
        .into_inner();
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let job = updates
                .message()
                .await
                .unwrap()
                .expect("job reaches the state");
            if want(&job) {
                return job;
            }
        }
    })
    .await
    .expect("job state in time")
}

#[tokio::test]
async fn a_rollout_job_survives_a_coordinator_restart_and_resumes() {
    use hav_proto::v1::{ControlRolloutRequest, PushConfigRequest, StartRolloutRequest};
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let operator = pki.operator(&coordinator, "ana", Role::Operator);
    let mut fleet = client::connect(&operator).await.unwrap();
    let mut lb1 = pki.agent(&coordinator, "lb-1", "lb-1");
    let mut lb2 = pki.agent(&coordinator, "lb-2", "lb-2");
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    await_link(&mut lb2, |s| *s == LinkState::Connected).await;
    let model = Arc::new(Mutex::new(Model {
        configured: BTreeMap::from([
            ("lb-1".into(), BTreeMap::from([(10, 150), (11, 140)])),
            ("lb-2".into(), BTreeMap::from([(10, 140), (11, 150)])),
        ]),
        overrides: BTreeMap::new(),
        drained: BTreeMap::new(),
        vips: BTreeMap::from([
            (10, "198.51.100.10/24".into()),
            (11, "198.51.100.11/24".into()),
        ]),
    }));
    // The maintenance command blocks until the test lets it finish.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let _drivers = drive_gated(
        model.clone(),
        vec![("lb-1".into(), lb1), ("lb-2".into(), lb2)],
        gate.clone(),
    );
    fleet
        .push_config(PushConfigRequest {
            fleet: WEB_FLEET.into(),
            fleet_name: "fleet.toml".into(),
            ..PushConfigRequest::default()
        })
        .await
        .unwrap();
    let job = fleet
        .start_rollout(StartRolloutRequest {
            all: true,
            max_parallel: 1,
            exec: vec!["upgrade".into()],
            reason: "monthly patch".into(),
            ..StartRolloutRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(job.waves, 2);
    let executing = await_job(&mut fleet, job.id, |j| {
        j.nodes.iter().any(|n| n.step == "executing")
    })
    .await;
    assert_eq!(executing.nodes[0].node, "lb-1");
    assert!(
        model.lock().unwrap().drained["lb-1"],
        "lb-1 is drained while its command runs"
    );

    // The coordinator goes away mid-command and comes back at the same address.
    drop(fleet);
    let address = coordinator.local_addr;
    coordinator.shutdown().await.unwrap();
    let mut config = hav_coordinator::CoordinatorConfig::new(
        address,
        pki.server_files(),
        data.path().to_owned(),
    );
    config.command_timeout = std::time::Duration::from_secs(5);
    let coordinator = hav_coordinator::start(config).await.unwrap();
    let operator = pki.operator(&coordinator, "ana", Role::Operator);
    let mut fleet = client::connect(&operator).await.unwrap();
    let status = fleet
        .control_rollout(ControlRolloutRequest {
            job: job.id,
            action: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status, "interrupted");
    // Its command was cut off by the shutdown: not done, to be redone on resume.
    assert_ne!(status.nodes[0].step, "done");
    assert!(status.error.contains("shutdown"), "{}", status.error);

    // Wait for both agents to be back (a drain needs their snapshots), then resume.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while fleet
        .list_nodes(hav_proto::v1::ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes
        .iter()
        .filter(|n| n.connected)
        .count()
        < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "agents did not reconnect"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    gate.add_permits(1_000);
    fleet
        .control_rollout(ControlRolloutRequest {
            job: job.id,
            action: hav_proto::v1::control_rollout_request::Action::Resume as i32,
        })
        .await
        .unwrap();
    let done = await_job(&mut fleet, job.id, |j| j.status != "running").await;
    assert_eq!(done.status, "done", "{}", done.error);
    assert!(done.nodes.iter().all(|n| n.step == "done"));
    let m = model.lock().unwrap();
    assert!(m.overrides.is_empty() && m.drained.values().all(|d| !d));
    assert_eq!(
        m.snapshot("lb-1").instances[0].vips_held,
        ["198.51.100.10/24"]
    );
}

/// The next split-brain event on `events`.
async fn next_split_brain(
    events: &mut tonic::Streaming<hav_proto::v1::FleetEvent>,
) -> hav_proto::v1::SplitBrain {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            let event = events.message().await.unwrap().unwrap();
            if let Some(fleet_event::Kind::SplitBrain(split)) = event.kind {
                return split;
            }
        }
    })
    .await
    .expect("a split-brain event in time")
}

/// Re-reads ListNodes until `node` has reported `state` for VRID 10.
async fn await_reported(
    fleet: &mut hav_proto::v1::fleet_service_client::FleetServiceClient<tonic::transport::Channel>,
    node: &str,
    state: VrrpState,
) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let nodes = fleet
            .list_nodes(hav_proto::v1::ListNodesRequest {})
            .await
            .unwrap()
            .into_inner()
            .nodes;
        let seen = nodes.iter().any(|n| {
            n.name == node
                && n.snapshot.as_ref().is_some_and(|s| {
                    s.instances
                        .iter()
                        .any(|i| i.vrid == 10 && i.state == state as i32)
                })
        });
        if seen {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{node} not {state:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_masters_within_the_grace_are_never_reported_and_over_follows_raised() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let mut events = fleet
        .watch_events(WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut lb1 = pki.agent(&coordinator, "lb-1", "lb-1");
    let mut lb2 = pki.agent(&coordinator, "lb-2", "lb-2");
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    await_link(&mut lb2, |s| *s == LinkState::Connected).await;
    let vip = "198.51.100.10/24";
    let now = crate_unix_ms;
    lb1.snapshots
        .send_replace(snapshot(now(), vec![instance(10, true, 150, vip)]));
    await_reported(&mut fleet, "lb-1", VrrpState::Master).await;
    // A preemption: lb-2 is master for a moment, then hears lb-1 and steps back, well within
    // the grace (one advert interval; 1 s by default).
    lb2.snapshots
        .send_replace(snapshot(now(), vec![instance(10, true, 140, vip)]));
    await_reported(&mut fleet, "lb-2", VrrpState::Master).await;
    lb2.snapshots
        .send_replace(snapshot(now(), vec![instance(10, false, 140, vip)]));
    await_reported(&mut fleet, "lb-2", VrrpState::Backup).await;
    // Then a real split brain: the first event is its raise, the next its end.
    lb2.snapshots
        .send_replace(snapshot(now(), vec![instance(10, true, 140, vip)]));
    let raised = next_split_brain(&mut events).await;
    assert!(!raised.resolved, "an end without a start: {raised:?}");
    lb2.snapshots
        .send_replace(snapshot(now(), vec![instance(10, false, 140, vip)]));
    let over = next_split_brain(&mut events).await;
    assert!(over.resolved, "{over:?}");
}

#[tokio::test]
async fn a_demoted_loser_stepping_down_before_its_ack_is_reported_over_after_raised() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = support::start_with(&pki, data.path(), |config| {
        config.orchestration.resolve_split_brain = true;
    })
    .await;
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let mut events = fleet
        .watch_events(WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut lb1 = pki.agent(&coordinator, "lb-1", "lb-1");
    let mut lb2 = pki.agent(&coordinator, "lb-2", "lb-2");
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    await_link(&mut lb2, |s| *s == LinkState::Connected).await;
    let vip = "198.51.100.10/24";
    lb1.snapshots.send_replace(snapshot(
        crate_unix_ms(),
        vec![instance(10, true, 150, vip)],
    ));
    await_reported(&mut fleet, "lb-1", VrrpState::Master).await;
    lb2.snapshots.send_replace(snapshot(
        crate_unix_ms(),
        vec![instance(10, true, 140, vip)],
    ));
    // lb-2 resigns as soon as the override is in, and reports it before it acknowledges.
    let command = tokio::time::timeout(TIMEOUT, lb2.commands.recv())
        .await
        .expect("a demotion in time")
        .expect("link open");
    lb2.snapshots
        .send_replace(snapshot(crate_unix_ms(), vec![instance(10, false, 1, vip)]));
    await_reported(&mut fleet, "lb-2", VrrpState::Backup).await;
    // Not a synchronisation: widens the window in which the end could overtake the raise.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    command.ack(Ok::<(), String>(()));
    let raised = next_split_brain(&mut events).await;
    assert!(
        !raised.resolved,
        "the end came before the raise: {raised:?}"
    );
    assert!(
        raised.action.contains("lb-2 vip-10 (140): demoted"),
        "{}",
        raised.action
    );
    let over = next_split_brain(&mut events).await;
    assert!(over.resolved, "{over:?}");
}

const SLOW_FLEET: &str = r#"
[[group]]
name = "web"
interface = "eth0"
vips = ["198.51.100.10/24"]
first_vrid = 10
advert_interval = "2s"
[[group.node]]
name = "lb-1"
address = "198.51.100.1"
[[group.node]]
name = "lb-2"
address = "198.51.100.2"
"#;

#[tokio::test]
async fn the_split_brain_grace_is_one_advert_interval_of_the_instance() {
    use hav_proto::v1::PushConfigRequest;
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let operator = pki.operator(&coordinator, "ana", Role::Operator);
    let mut fleet = client::connect(&operator).await.unwrap();
    // Pushed before the agents connect: they get it (and need not answer) when they do.
    fleet
        .push_config(PushConfigRequest {
            fleet: SLOW_FLEET.into(),
            fleet_name: "fleet.toml".into(),
            ..PushConfigRequest::default()
        })
        .await
        .unwrap();
    let mut events = fleet
        .watch_events(WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    let mut lb1 = pki.agent(&coordinator, "lb-1", "lb-1");
    let mut lb2 = pki.agent(&coordinator, "lb-2", "lb-2");
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    await_link(&mut lb2, |s| *s == LinkState::Connected).await;
    let vip = "198.51.100.10/24";
    let master = |priority| {
        let mut i = instance(10, true, priority, vip);
        i.name = "web-vip0".into();
        snapshot(crate_unix_ms(), vec![i])
    };
    lb1.snapshots.send_replace(master(150));
    await_reported(&mut fleet, "lb-1", VrrpState::Master).await;
    lb2.snapshots.send_replace(master(140));
    await_reported(&mut fleet, "lb-2", VrrpState::Master).await;
    let both = std::time::Instant::now();
    let raised = next_split_brain(&mut events).await;
    let after = both.elapsed();
    assert!(!raised.resolved, "{raised:?}");
    // Two masters of a 2 s instance are a split brain only after 2 s (a lower bound: the
    // report of lb-2's state was already stored when the clock started).
    assert!(
        after >= std::time::Duration::from_millis(1_900),
        "raised {after:?} after both masters were reported"
    );
}
