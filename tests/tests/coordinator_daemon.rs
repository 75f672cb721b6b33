//! hav-coordinator as systemd runs it, the real binary on loopback: `READY=1` on a real
//! `$NOTIFY_SOCKET` once the port listens, `WATCHDOG=1` when `WATCHDOG_USEC` asks for it,
//! `STOPPING=1` and exit 0 on SIGTERM or SIGINT with the long-lived streams told why and what
//! agents reported written (the store closed cleanly), and SIGHUP serving a rotated certificate
//! to the next client without a restart. Needs `havctl` and `hav-coordinator` built
//! (`cargo build -p havctl -p hav-coordinator`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hav_proto::v1::agent_message::Body as AgentBody;
use hav_proto::v1::agent_service_client::AgentServiceClient;
use hav_proto::v1::coordinator_message::Body as CoordinatorBody;
use hav_proto::v1::fleet_service_client::FleetServiceClient;
use hav_proto::v1::{
    AgentMessage, Event, Hello, HistoryRequest, InstanceState, ListNodesRequest, PROTOCOL_VERSION,
    StateSnapshot, Transition, VrrpState, WatchEventsRequest, event,
};
use hav_tests::coordinator::{CERT, CoordinatorProcess, Error, KEY};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;

/// Safety net of a wait (never reached when things work).
const WAIT: Duration = Duration::from_secs(20);
/// What the coordinator says when it ends a long-lived stream on a stop.
const SHUTTING_DOWN: &str = "hav-coordinator is shutting down";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_with_a_reason_writes_what_agents_reported_and_exits_0()
-> Result<(), Error> {
    let mut coordinator = CoordinatorProcess::new()?;
    coordinator.start()?;

    // An agent reports a snapshot and a transition; an operator watches.
    let (to_coordinator, outbound) = mpsc::channel::<AgentMessage>(8);
    to_coordinator
        .send(agent_message(AgentBody::Hello(Hello {
            software_version: "test-agent".into(),
            protocol_version: PROTOCOL_VERSION,
            capabilities: Vec::new(),
            node_name: "lb-1".into(),
            config_version: 0,
        })))
        .await?;
    to_coordinator
        .send(agent_message(AgentBody::Snapshot(snapshot(123))))
        .await?;
    let mut agent = AgentServiceClient::new(coordinator.channel("agent-lb-1").await?)
        .connect(receiver_stream(outbound))
        .await?
        .into_inner();
    let welcome = tokio::time::timeout(WAIT, agent.message()).await??;
    assert!(
        matches!(
            welcome.and_then(|m| m.body),
            Some(CoordinatorBody::Welcome(_))
        ),
        "the agent is welcomed"
    );
    let mut fleet = FleetServiceClient::new(coordinator.channel("operator-olga").await?);
    let mut watch = fleet
        .watch_events(WatchEventsRequest::default())
        .await?
        .into_inner();
    to_coordinator
        .send(agent_message(AgentBody::Event(Event {
            unix_ms: 42,
            kind: Some(event::Kind::Transition(Transition {
                instance: "web".into(),
                from: VrrpState::Backup as i32,
                to: VrrpState::Master as i32,
                cause: "reported just before SIGTERM".into(),
            })),
        })))
        .await?;
    // Received (it follows the snapshot on the stream), not yet written: the write-behind
    // commits it in its own time, and the stop must flush it.
    coordinator.wait_log("transition queued for the audit log", 1, WAIT)?;

    coordinator.signal(Signal::SIGTERM)?;
    assert_eq!(coordinator.notification(WAIT)?, "STOPPING=1");
    // The watcher had the transition first.
    let event = tokio::time::timeout(WAIT, watch.message()).await??;
    assert!(
        event.is_some_and(|e| e.node == "lb-1"),
        "the transition is watched"
    );
    for (who, end) in [
        (
            "agent",
            tokio::time::timeout(WAIT, agent.message())
                .await?
                .map(|m| format!("{m:?}")),
        ),
        (
            "watcher",
            tokio::time::timeout(WAIT, watch.message())
                .await?
                .map(|m| format!("{m:?}")),
        ),
    ] {
        let Err(status) = end else {
            panic!("the {who}'s stream ended without a status: {end:?}");
        };
        assert_eq!(status.code(), tonic::Code::Unavailable, "{who}: {status:?}");
        assert_eq!(status.message(), SHUTTING_DOWN, "{who}");
    }
    let exit = coordinator.wait_exit(WAIT)?;
    assert_eq!(
        exit.code(),
        Some(0),
        "exit status {exit}:\n{}",
        coordinator.log()
    );
    let log = coordinator.log();
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(log.contains("hav-coordinator stopped"), "{log}");

    // The database was closed, not abandoned: opening it needs no repair.
    let repaired = Arc::new(AtomicBool::new(false));
    let mut builder = redb::Database::builder();
    let flag = repaired.clone();
    builder.set_repair_callback(move |_| flag.store(true, Ordering::SeqCst));
    drop(builder.open(coordinator.data().join("coordinator.redb"))?);
    assert!(!repaired.load(Ordering::SeqCst), "redb needed a repair");

    // After a restart, what the agent reported is there.
    coordinator.start()?;
    let mut fleet = FleetServiceClient::new(coordinator.channel("operator-olga").await?);
    let nodes = fleet
        .list_nodes(ListNodesRequest {})
        .await?
        .into_inner()
        .nodes;
    let node = nodes
        .iter()
        .find(|n| n.name == "lb-1")
        .ok_or("lb-1 is listed after the restart")?;
    assert!(!node.connected);
    assert_eq!(node.software_version, "test-agent");
    let reported = node.snapshot.as_ref().ok_or("its last snapshot is kept")?;
    assert_eq!(reported.instances[0].effective_priority, 123);
    let history = fleet
        .history(HistoryRequest { limit: 10 })
        .await?
        .into_inner();
    assert!(
        history.audit.iter().any(|entry| entry.who == "node lb-1"
            && entry.detail == "web: BACKUP -> MASTER: reported just before SIGTERM"),
        "the transition is in the audit log: {:?}",
        history.audit
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_comes_once_the_port_listens_then_the_watchdog_is_fed_and_sigint_stops()
-> Result<(), Error> {
    let mut coordinator = CoordinatorProcess::new()?;
    coordinator
        .env
        .push(("WATCHDOG_USEC".into(), "200000".into()));
    // `start` returns on READY=1 with the address in its status.
    coordinator.start()?;
    // One connection attempt, no retry: the port listened when READY=1 was sent.
    let mut fleet = FleetServiceClient::new(coordinator.channel("operator-olga").await?);
    fleet.list_nodes(ListNodesRequest {}).await?;
    // Every WATCHDOG_USEC / 2.
    for _ in 0..3 {
        assert_eq!(coordinator.notification(WAIT)?, "WATCHDOG=1");
    }
    coordinator.signal(Signal::SIGINT)?;
    let mut stopping = coordinator.notification(WAIT)?;
    // A ping may have been sent just before the signal was handled.
    if stopping == "WATCHDOG=1" {
        stopping = coordinator.notification(WAIT)?;
    }
    assert_eq!(stopping, "STOPPING=1");
    let exit = coordinator.wait_exit(WAIT)?;
    assert_eq!(
        exit.code(),
        Some(0),
        "exit status {exit}:\n{}",
        coordinator.log()
    );
    assert!(coordinator.log().contains("SIGINT: shutting down"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_serves_a_rotated_certificate_to_the_next_client_without_a_restart()
-> Result<(), Error> {
    let mut coordinator = CoordinatorProcess::new()?;
    // Only SIGHUP reloads in this test: the files are not polled within it.
    coordinator.args = vec!["--reload-interval".into(), "3600".into()];
    coordinator.start()?;
    let pid = coordinator.pid();
    let certs = coordinator.certs();
    let original = leaf_der(&certs.join(CERT))?;
    assert_eq!(served_certificate(&coordinator).await?, original);

    // A broken key: the reload is refused and the certificate in force stays.
    let key = std::fs::read(certs.join(KEY))?;
    std::fs::write(certs.join(KEY), b"not a key")?;
    coordinator.signal(Signal::SIGHUP)?;
    coordinator.wait_log("SIGHUP: TLS reload failed", 1, WAIT)?;
    assert_eq!(served_certificate(&coordinator).await?, original);
    std::fs::write(certs.join(KEY), key)?;

    // A rotation: a new certificate and key renamed into place, then SIGHUP.
    let rotated = certs.join("rotated");
    std::fs::create_dir_all(&rotated)?;
    let out = rotated.display().to_string();
    coordinator.issue(&[
        "--kind",
        "coordinator",
        "--name",
        "coord",
        "--san",
        "127.0.0.1",
        "--out",
        &out,
    ])?;
    let renewed = leaf_der(&rotated.join(CERT))?;
    assert_ne!(renewed, original);
    std::fs::rename(rotated.join(KEY), certs.join(KEY))?;
    std::fs::rename(rotated.join(CERT), certs.join(CERT))?;
    coordinator.signal(Signal::SIGHUP)?;
    coordinator.wait_log("SIGHUP: TLS certificates reloaded", 1, WAIT)?;

    assert_eq!(served_certificate(&coordinator).await?, renewed);
    let mut fleet = FleetServiceClient::new(coordinator.channel("operator-olga").await?);
    fleet.list_nodes(ListNodesRequest {}).await?;
    assert_eq!(coordinator.pid(), pid, "no restart");
    Ok(())
}

/// The leaf certificate a TLS handshake with the coordinator gets now (as operator `olga`).
async fn served_certificate(coordinator: &CoordinatorProcess) -> Result<Vec<u8>, Error> {
    let address = coordinator.address.ok_or("not running")?;
    let tls = coordinator.client_tls("operator-olga")?;
    let tcp = tokio::net::TcpStream::connect(address).await?;
    let name = rustls::pki_types::ServerName::from(address.ip());
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await?;
    let leaf = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .ok_or("the coordinator presented no certificate")?;
    Ok(leaf.to_vec())
}

/// The first certificate of a PEM file, DER-encoded.
fn leaf_der(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    let certs = hav_proto::transport::load_certs(path, "certificate")?;
    Ok(certs.first().ok_or("no certificate in the file")?.to_vec())
}

fn agent_message(body: AgentBody) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

fn snapshot(priority: u32) -> StateSnapshot {
    StateSnapshot {
        config_version: 0,
        instances: vec![InstanceState {
            name: "web".into(),
            vrid: 51,
            state: VrrpState::Master as i32,
            effective_priority: priority,
            configured_priority: priority,
            vips_held: vec!["198.51.100.10/24".into()],
            interface: "eth0".into(),
            priority_override: None,
            advert_interval_ms: 1000,
            draining_connections: None,
        }],
        drained: false,
        unix_ms: 1,
    }
}

/// `rx` as the request stream of a client-streaming call.
fn receiver_stream(
    rx: mpsc::Receiver<AgentMessage>,
) -> impl futures::Stream<Item = AgentMessage> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|m| (m, rx)) })
}
