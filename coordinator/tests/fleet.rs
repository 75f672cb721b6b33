//! End-to-end tests of the control plane over real mTLS: real certificates from a real CA in a
//! temp dir, a coordinator on 127.0.0.1 port 0, the real agent client and havctl's client.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use hav_agent::control::{Command, LinkState};
use hav_proto::identity::Role;
use hav_proto::v1::{
    ApplyOutcome, Event, HistoryRequest, InstanceState, ListNodesRequest, NodeConfigDoc,
    NodeConfigEntry, PushConfigRequest, RollbackRequest, StateSnapshot, Transition, VrrpState,
    WatchEventsRequest, event, fleet_event, fleet_service_client::FleetServiceClient,
};
use havctl::certs::{IssueRequest, Kind};
use havctl::client::{self, CliError};
use support::{Pki, TIMEOUT, await_link, start};

fn snapshot(config_version: u64) -> StateSnapshot {
    StateSnapshot {
        config_version,
        instances: vec![InstanceState {
            name: "web".into(),
            vrid: 51,
            state: VrrpState::Master as i32,
            effective_priority: 150,
            configured_priority: 150,
            vips_held: vec!["198.51.100.10/24".into()],
            interface: "eth0".into(),
            priority_override: None,
            advert_interval_ms: 0,
            draining_connections: None,
        }],
        drained: false,
        unix_ms: 1,
    }
}

fn transition(cause: &str) -> Event {
    Event {
        unix_ms: 2,
        kind: Some(event::Kind::Transition(Transition {
            instance: "web".into(),
            from: VrrpState::Backup as i32,
            to: VrrpState::Master as i32,
            cause: cause.into(),
        })),
    }
}

async fn next_event(
    events: &mut tonic::Streaming<hav_proto::v1::FleetEvent>,
) -> hav_proto::v1::FleetEvent {
    tokio::time::timeout(TIMEOUT, events.message())
        .await
        .expect("event in time")
        .expect("stream ok")
        .expect("stream open")
}

#[tokio::test]
async fn agent_appears_with_identity_from_cert_and_watchers_get_its_events() {
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

    let mut agent = pki.agent(&coordinator, "lb-1", "lb-1");
    agent.snapshots.send_replace(snapshot(0));
    await_link(&mut agent, |s| *s == LinkState::Connected).await;
    let presence = next_event(&mut events).await;
    assert_eq!(presence.node, "lb-1");
    assert!(matches!(
        presence.kind,
        Some(fleet_event::Kind::Presence(p)) if p.connected
    ));

    agent.events.send(transition("master-down timer"));
    let received = next_event(&mut events).await;
    assert_eq!(
        received.node, "lb-1",
        "node name comes from the certificate"
    );
    let Some(fleet_event::Kind::Agent(Event {
        kind: Some(event::Kind::Transition(t)),
        ..
    })) = received.kind
    else {
        panic!("expected a transition, got {received:?}");
    };
    assert_eq!(t.cause, "master-down timer");

    // The snapshot was sent before the event, so it is in the registry now.
    let nodes = fleet
        .list_nodes(ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert_eq!(nodes.len(), 1);
    let node = &nodes[0];
    assert_eq!(node.name, "lb-1");
    assert!(node.connected);
    assert_eq!(node.software_version, "test-0.1");
    assert_eq!(node.snapshot.as_ref().unwrap().instances[0].vrid, 51);

    drop(agent);
    let gone = next_event(&mut events).await;
    assert!(matches!(gone.kind, Some(fleet_event::Kind::Presence(p)) if !p.connected));
}

#[tokio::test]
async fn hello_naming_another_node_is_refused() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let mut agent = pki.agent(&coordinator, "lb-1", "lb-2");
    let state = await_link(&mut agent, |s| matches!(s, LinkState::Disconnected { .. })).await;
    let LinkState::Disconnected { error, .. } = state else {
        unreachable!()
    };
    assert!(
        error.contains("certificate identifies node `lb-1` but Hello names `lb-2`"),
        "{error}"
    );
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let nodes = fleet
        .list_nodes(ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    assert!(nodes.is_empty(), "{nodes:?}");
}

#[tokio::test]
async fn viewer_cannot_push_but_operator_can_and_the_agent_applies_it() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let mut agent = pki.agent(&coordinator, "lb-1", "lb-1");
    await_link(&mut agent, |s| *s == LinkState::Connected).await;

    let configs = vec![NodeConfigEntry {
        node: "lb-1".into(),
        toml: node_toml("lb-1", 51),
    }];
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut as_viewer = client::connect(&viewer).await.unwrap();
    let refused = as_viewer
        .push_config(PushConfigRequest {
            configs: configs.clone(),
            dry_run: false,
            comment: String::new(),
            groups: Vec::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert!(
        refused
            .message()
            .contains("viewer vera may not push config"),
        "{}",
        refused.message()
    );
    assert!(refused.message().contains("--role operator"));
    let dry = as_viewer
        .push_config(PushConfigRequest {
            configs: configs.clone(),
            dry_run: true,
            comment: String::new(),
            groups: Vec::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(dry.version, 0);
    assert!(
        dry.nodes[0].diff.contains("+ vrid = 51\n"),
        "{}",
        dry.nodes[0].diff
    );

    // The daemon side: apply whatever comes and ack it.
    let daemon = tokio::spawn(async move {
        let pending = agent.commands.recv().await.unwrap();
        let Command::ApplyConfig { version, toml } = pending.command.clone() else {
            panic!("expected apply_config, got {:?}", pending.command);
        };
        let doc = NodeConfigDoc { version, toml };
        pending.ack(Ok::<(), String>(()));
        (doc, agent)
    });
    let operator = pki.operator(&coordinator, "olga", Role::Operator);
    let mut as_operator = client::connect(&operator).await.unwrap();
    let pushed = as_operator
        .push_config(PushConfigRequest {
            configs,
            dry_run: false,
            comment: "first".into(),
            groups: Vec::new(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pushed.version, 1);
    assert_eq!(pushed.nodes[0].outcome, ApplyOutcome::Applied as i32);
    let (doc, _agent) = tokio::time::timeout(TIMEOUT, daemon)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(doc.version, 1);
    assert!(doc.toml.contains("vrid = 51"));

    let history = as_viewer
        .history(HistoryRequest { limit: 10 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(history.versions[0].author, "olga");
    assert!(
        history
            .audit
            .iter()
            .any(|a| a.who == "viewer vera" && !a.allowed),
        "the refusal is audited: {:?}",
        history.audit
    );
}

#[tokio::test]
async fn plaintext_and_certificateless_clients_are_refused() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;

    // Plain HTTP/2, no TLS at all.
    let plain =
        tonic::transport::Endpoint::from_shared(format!("http://{}", coordinator.local_addr))
            .unwrap()
            .connect_timeout(TIMEOUT);
    let result = match plain.connect().await {
        Ok(channel) => FleetServiceClient::new(channel)
            .list_nodes(ListNodesRequest {})
            .await
            .map(|_| ()),
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    assert!(result.is_err(), "plaintext client got an answer");

    // TLS, trusting the fleet CA, but without a client certificate.
    let roots = hav_proto::transport::root_store(&pki.ca()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let error =
        match hav_proto::transport::connect(&coordinator.local_addr.to_string(), Arc::new(tls))
            .await
        {
            Ok(channel) => {
                let status = FleetServiceClient::new(channel)
                    .list_nodes(ListNodesRequest {})
                    .await
                    .unwrap_err();
                hav_proto::transport::explain_status(&status)
            }
            Err(e) => e.to_string(),
        };
    assert!(error.contains("requires a client certificate"), "{error}");
}

#[tokio::test]
async fn wrong_ca_and_expired_client_certificates_are_refused_with_clear_errors() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;

    let foreign = Pki::new();
    let mut request = IssueRequest::new(Kind::Operator, "mallory", 30);
    request.role = Some(Role::Operator);
    let written = foreign.issue(request);
    let mut target = pki.target(&coordinator, &written);
    target.ca = Some(pki.ca()); // trusts the real coordinator, presents a foreign cert
    let error = connect_and_list(&target).await;
    assert!(error.contains("not signed by the fleet CA"), "{error}");

    let mut request = IssueRequest::new(Kind::Operator, "late", 30);
    request.role = Some(Role::Viewer);
    request.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    request.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    let written = pki.issue(request);
    let error = connect_and_list(&pki.target(&coordinator, &written)).await;
    assert!(error.contains("has expired"), "{error}");

    // And the other way: a client that does not trust the coordinator's CA.
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut wrong_ca = viewer.clone();
    wrong_ca.ca = Some(foreign.ca());
    let error = connect_and_list(&wrong_ca).await;
    assert!(error.contains("not signed by our fleet CA"), "{error}");
}

/// The one-line error havctl would print for `status`.
async fn connect_and_list(target: &havctl::client::Target) -> String {
    let result: Result<(), CliError> = async {
        let mut fleet = client::connect(target).await?;
        fleet.list_nodes(ListNodesRequest {}).await?;
        Ok(())
    }
    .await;
    result.expect_err("must be refused").to_string()
}

#[tokio::test]
async fn restart_keeps_history_audit_and_last_state() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    {
        let coordinator = start(&pki, data.path()).await;
        let operator = pki.operator(&coordinator, "olga", Role::Operator);
        let mut fleet = client::connect(&operator).await.unwrap();
        for (vrid, text) in [(1, node_toml("lb-9", 1)), (2, node_toml("lb-9", 2))] {
            fleet
                .push_config(PushConfigRequest {
                    configs: vec![NodeConfigEntry {
                        node: "lb-9".into(),
                        toml: text,
                    }],
                    dry_run: false,
                    comment: format!("vrid {vrid}"),
                    groups: Vec::new(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        let rolled = fleet
            .rollback(RollbackRequest {
                version: 1,
                comment: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(rolled.version, 3);
        // lb-9 is not connected: stored, sent when it connects.
        assert_eq!(rolled.nodes[0].outcome, ApplyOutcome::Offline as i32);
        // An agent and a watcher stay connected: shutdown must still complete.
        let mut agent = pki.agent(&coordinator, "lb-7", "lb-7");
        await_link(&mut agent, |s| *s == LinkState::Connected).await;
        let mut events = fleet
            .watch_events(WatchEventsRequest::default())
            .await
            .unwrap()
            .into_inner();
        tokio::time::timeout(TIMEOUT, coordinator.shutdown())
            .await
            .expect("shutdown with open streams completes")
            .unwrap();
        let end = tokio::time::timeout(TIMEOUT, events.message())
            .await
            .unwrap();
        // The watch ends saying why.
        assert!(
            matches!(&end, Err(status) if status.code() == tonic::Code::Unavailable
                && status.message() == hav_coordinator::closing::SHUTTING_DOWN),
            "watch stream ends: {end:?}"
        );
        let LinkState::Disconnected { error, .. } =
            await_link(&mut agent, |s| matches!(s, LinkState::Disconnected { .. })).await
        else {
            unreachable!("awaited a disconnection");
        };
        assert!(
            error.contains(hav_coordinator::closing::SHUTTING_DOWN),
            "the agent is told why: {error}"
        );
    }
    let coordinator = start(&pki, data.path()).await;
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let history = fleet
        .history(HistoryRequest { limit: 10 })
        .await
        .unwrap()
        .into_inner();
    let versions: Vec<(u64, u64)> = history
        .versions
        .iter()
        .map(|v| (v.version, v.rollback_of))
        .collect();
    assert_eq!(versions, vec![(3, 1), (2, 0), (1, 0)]);
    assert_eq!(history.audit.len(), 3);
    assert!(history.audit.iter().all(|a| a.who == "olga"));

    // The stored desired config reaches the node when it connects after the restart.
    let mut agent = pki.agent(&coordinator, "lb-9", "lb-9");
    let pending = tokio::time::timeout(TIMEOUT, agent.commands.recv())
        .await
        .unwrap()
        .unwrap();
    let Command::ApplyConfig { version, toml } = pending.command.clone() else {
        panic!("expected apply_config");
    };
    let doc = NodeConfigDoc { version, toml };
    let canonical = hav_proto::config::parse_node_config(&node_toml("lb-9", 1), "test")
        .unwrap()
        .to_toml();
    assert_eq!((doc.version, doc.toml.as_str()), (3, canonical.as_str()));
    pending.ack(Ok::<(), String>(()));
}

#[tokio::test]
async fn certificates_reload_without_restart() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let mut coordinator = start(&pki, data.path()).await;
    let before = coordinator.tls_config.borrow_and_update().clone();
    // Rotate the coordinator certificate in place.
    pki.issue(IssueRequest::new(Kind::Coordinator, "coord", 60));
    tokio::time::timeout(TIMEOUT, coordinator.tls_config.changed())
        .await
        .expect("reload in time")
        .unwrap();
    assert!(!Arc::ptr_eq(&before, &coordinator.tls_config.borrow()));
    // New connections use the new certificate and still work.
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    fleet.list_nodes(ListNodesRequest {}).await.unwrap();
    let _ = Duration::ZERO;
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let operator = pki.operator(&coordinator, "olga", Role::Operator);
    let files = hav_proto::transport::ClientTlsFiles {
        ca: operator.ca.clone().unwrap(),
        cert: operator.cert.clone().unwrap(),
        key: operator.key.clone().unwrap(),
    };
    let tls = hav_proto::transport::client_config(&files).unwrap();
    let channel = hav_proto::transport::connect(&operator.coordinator, tls)
        .await
        .unwrap();
    // A client without our limits, so that the server's limit is what refuses.
    let mut unlimited = FleetServiceClient::new(channel);
    let huge = "# padding\n".repeat(hav_proto::v1::MAX_MESSAGE_BYTES / 10 + 1);
    let status = unlimited
        .push_config(PushConfigRequest {
            configs: vec![NodeConfigEntry {
                node: "lb-1".into(),
                toml: huge,
            }],
            dry_run: false,
            comment: String::new(),
            groups: Vec::new(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    // Nothing was stored.
    let history = unlimited
        .history(HistoryRequest { limit: 10 })
        .await
        .unwrap()
        .into_inner();
    assert!(history.versions.is_empty());
}

#[tokio::test]
async fn certificates_of_the_wrong_role_are_refused_on_both_apis() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;

    // An agent certificate on the fleet API.
    let agent_cert = pki.issue(IssueRequest::new(Kind::Agent, "lb-1", 30));
    let error = connect_and_list(&pki.target(&coordinator, &agent_cert)).await;
    assert!(
        error.contains("node lb-1 may not use the fleet API"),
        "{error}"
    );

    // An operator certificate on the agent API: the link reports the refusal.
    let mut request = IssueRequest::new(Kind::Operator, "olga", 30);
    request.role = Some(Role::Operator);
    let operator = pki.issue(request);
    let config = hav_agent::control::ControlConfig {
        coordinators: vec![coordinator.local_addr.to_string()],
        node_name: "olga".into(),
        tls: hav_proto::transport::ClientTlsFiles {
            ca: pki.ca(),
            cert: operator.cert,
            key: operator.key,
        },
        software_version: "test".into(),
        capabilities: Vec::new(),
        backoff: hav_agent::control::Backoff::new(
            Duration::from_millis(50),
            Duration::from_millis(200),
        ),
    };
    let (mut side, _task) = hav_agent::control::spawn(config);
    let state = await_link(&mut side, |s| matches!(s, LinkState::Disconnected { .. })).await;
    let LinkState::Disconnected { error, .. } = state else {
        unreachable!()
    };
    assert!(
        error.contains("operator olga may not connect as an agent"),
        "{error}"
    );
}

#[tokio::test]
async fn an_expired_coordinator_certificate_is_refused_by_clients() {
    let pki = Pki::new();
    let mut request = IssueRequest::new(Kind::Coordinator, "coord", 30);
    request.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(10);
    request.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    pki.issue(request);
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let error = connect_and_list(&viewer).await;
    assert!(
        error.contains("the coordinator's certificate has expired"),
        "{error}"
    );
}

#[tokio::test]
async fn a_pair_is_changed_one_node_at_a_time_and_held_after_a_failure() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let mut first = pki.agent(&coordinator, "lb-1", "lb-1");
    let mut second = pki.agent(&coordinator, "lb-2", "lb-2");
    await_link(&mut first, |s| *s == LinkState::Connected).await;
    await_link(&mut second, |s| *s == LinkState::Connected).await;

    let fleet_file = r#"
[[group]]
name = "web"
interface = "eth0"
vips = ["198.51.100.100/24"]
[[group.node]]
name = "lb-1"
address = "198.51.100.11"
[[group.node]]
name = "lb-2"
address = "198.51.100.12"
"#;
    let request = PushConfigRequest {
        dry_run: false,
        comment: "pair".into(),
        fleet: fleet_file.into(),
        fleet_name: "fleet.toml".into(),
        ..Default::default()
    };
    // lb-1's daemon refuses the config.
    let refuse = tokio::spawn(async move {
        let pending = first.commands.recv().await.unwrap();
        pending.ack(Err("instance web: vrid 51 already used on eth0"));
        first
    });
    let operator = pki.operator(&coordinator, "olga", Role::Operator);
    let mut fleet = client::connect(&operator).await.unwrap();
    let response = fleet.push_config(request).await.unwrap().into_inner();
    let outcomes: Vec<(String, i32, String)> = response
        .nodes
        .iter()
        .map(|n| (n.node.clone(), n.outcome, n.error.clone()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (
                "lb-1".into(),
                ApplyOutcome::Failed as i32,
                "instance web: vrid 51 already used on eth0".into()
            ),
            (
                "lb-2".into(),
                ApplyOutcome::Held as i32,
                "not sent: lb-1 failed first".into()
            ),
        ]
    );
    let _first = tokio::time::timeout(TIMEOUT, refuse)
        .await
        .unwrap()
        .unwrap();
    // The push has been decided for every node, so lb-2 would already hold a command if one
    // had been sent.
    assert!(
        second.commands.try_recv().is_err(),
        "lb-2 must not be touched"
    );
}

#[tokio::test]
async fn the_agent_never_blocks_while_the_coordinator_is_away_and_reconnects_when_it_returns() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let address = coordinator.local_addr;
    let mut agent = pki.agent(&coordinator, "lb-1", "lb-1");
    agent.snapshots.send_replace(snapshot(0));
    await_link(&mut agent, |s| *s == LinkState::Connected).await;
    // The snapshot is persisted before the event that follows it is published.
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let mut events = fleet
        .watch_events(WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    agent.events.send(transition("first"));
    next_event(&mut events).await;
    drop((fleet, events));
    coordinator.shutdown().await.unwrap();
    await_link(&mut agent, |s| matches!(s, LinkState::Disconnected { .. })).await;

    // The daemon side keeps working with nobody listening: nothing here can block.
    for i in 0..2000u64 {
        agent.events.send(transition(&format!("offline {i}")));
        agent.snapshots.send_replace(snapshot(i));
    }
    assert!(
        agent.events.dropped() > 0,
        "a full queue drops, it never blocks"
    );

    // Same address, same data: the agent comes back by itself.
    let mut config = hav_coordinator::CoordinatorConfig::new(
        address,
        pki.server_files(),
        data.path().to_owned(),
    );
    config.reload_interval = Duration::from_millis(50);
    let coordinator = hav_coordinator::start(config).await.unwrap();
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut fleet = client::connect(&viewer).await.unwrap();
    let before = fleet
        .list_nodes(ListNodesRequest {})
        .await
        .unwrap()
        .into_inner()
        .nodes;
    // Known from the store even if it has not reconnected yet.
    assert_eq!(before[0].name, "lb-1");
    assert_eq!(before[0].snapshot.as_ref().unwrap().instances[0].vrid, 51);
    await_link(&mut agent, |s| *s == LinkState::Connected).await;
}

/// A minimal valid node config for `node` with one instance on VRID `vrid`.
fn node_toml(node: &str, vrid: u8) -> String {
    format!(
        "[node]\nname = \"{node}\"\n[[instance]]\nname = \"web\"\ninterface = \"eth0\"\n\
         vrid = {vrid}\nvips = [\"198.51.100.100/24\"]\n"
    )
}

#[tokio::test]
async fn a_node_held_back_by_a_stopped_push_is_not_sent_that_config_when_it_reconnects() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start(&pki, data.path()).await;
    let operator = pki.operator(&coordinator, "olga", Role::Operator);
    let mut fleet = client::connect(&operator).await.unwrap();
    // Version 1 for both nodes, which run it when they connect.
    let configs = ["lb-1", "lb-2"]
        .map(|node| NodeConfigEntry {
            node: node.into(),
            toml: node_toml(node, 51),
        })
        .to_vec();
    let first = PushConfigRequest {
        configs,
        ..Default::default()
    };
    assert_eq!(
        fleet.push_config(first).await.unwrap().into_inner().version,
        1
    );
    let mut lb1 = pki.agent(&coordinator, "lb-1", "lb-1");
    lb1.snapshots.send_replace(snapshot(1));
    await_link(&mut lb1, |s| *s == LinkState::Connected).await;
    let mut lb2 = pki.agent(&coordinator, "lb-2", "lb-2");
    lb2.snapshots.send_replace(snapshot(1));
    await_link(&mut lb2, |s| *s == LinkState::Connected).await;

    // Version 2 from a fleet file: lb-1 refuses it, so lb-2 is held back and stays at version 1
    // (recorded as version 3).
    let refuse = tokio::spawn(async move {
        let pending = lb1.commands.recv().await.unwrap();
        pending.ack(Err("refused"));
        lb1
    });
    let fleet_file = r#"
[[group]]
name = "web"
interface = "eth0"
vips = ["198.51.100.100/24"]
[[group.node]]
name = "lb-1"
address = "198.51.100.11"
[[group.node]]
name = "lb-2"
address = "198.51.100.12"
"#;
    let stopped = fleet
        .push_config(PushConfigRequest {
            fleet: fleet_file.into(),
            fleet_name: "fleet.toml".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.version, 2);
    assert_eq!(stopped.nodes[1].outcome, ApplyOutcome::Held as i32);
    let _lb1 = tokio::time::timeout(TIMEOUT, refuse)
        .await
        .unwrap()
        .unwrap();

    // lb-2 comes back running version 1, which is what the fleet records for it: the first
    // config it is sent is the next push's, never the one it was held back from.
    drop(lb2);
    let mut lb2 = pki.agent(&coordinator, "lb-2", "lb-2");
    lb2.snapshots.send_replace(snapshot(1));
    await_link(&mut lb2, |s| *s == LinkState::Connected).await;
    let next = PushConfigRequest {
        configs: vec![NodeConfigEntry {
            node: "lb-2".into(),
            toml: node_toml("lb-2", 52),
        }],
        ..Default::default()
    };
    let pushing = tokio::spawn(async move { fleet.push_config(next).await });
    let pending = tokio::time::timeout(TIMEOUT, lb2.commands.recv())
        .await
        .unwrap()
        .unwrap();
    let Command::ApplyConfig { version, toml } = pending.command.clone() else {
        panic!("expected apply_config, got {:?}", pending.command);
    };
    assert_eq!(version, 4, "{toml}");
    assert!(toml.contains("vrid = 52"), "{toml}");
    pending.ack(Ok::<(), String>(()));
    let pushed = pushing.await.unwrap().unwrap().into_inner();
    assert_eq!(pushed.version, 4);
}
