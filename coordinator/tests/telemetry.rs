//! The coordinator's telemetry with a real coordinator, the real agent client and havctl's client
//! over mTLS: `/metrics` scraped over HTTP as agents come and go and operators push and drain, and
//! the spans of a push and a drain received by an OTLP/gRPC collector in this process, down to the
//! agent's `agent.command` span joined through the trace context in the command.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;

use hav_agent::control::{Command, DaemonSide, LinkState, PendingCommand};
use hav_coordinator::telemetry::trace;
use hav_proto::config::{OtlpEndpoint, SamplingRatio};
use hav_proto::identity::Role;
use hav_proto::v1::{
    ApplyOutcome, DrainRequest, FleetEvent, NodeConfigEntry, PushConfigRequest, WatchEventsRequest,
    fleet_event,
};
use hav_tests::otlp::{Collector, Exported};
use havctl::client;
use support::{Pki, TIMEOUT, await_link, start_with};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::layer::SubscriberExt;

/// `GET /metrics`, parsed into series → value.
async fn scrape(address: SocketAddr) -> BTreeMap<String, f64> {
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn get(metrics: &BTreeMap<String, f64>, series: &str) -> f64 {
    *metrics
        .get(series)
        .unwrap_or_else(|| panic!("{series} not exposed: {metrics:#?}"))
}

/// A push of a valid one-instance config for `node`.
fn push_request(node: &str) -> PushConfigRequest {
    let toml = format!(
        "[node]\nname = \"{node}\"\n[[instance]]\nname = \"web\"\ninterface = \"eth0\"\n\
         vrid = 51\nvips = [\"198.51.100.100/24\"]\n"
    );
    PushConfigRequest {
        configs: vec![NodeConfigEntry {
            node: node.into(),
            toml,
        }],
        dry_run: false,
        comment: String::new(),
        groups: Vec::new(),
        ..PushConfigRequest::default()
    }
}

async fn next_command(agent: &mut DaemonSide) -> PendingCommand {
    tokio::time::timeout(TIMEOUT, agent.commands.recv())
        .await
        .expect("command in time")
        .expect("link alive")
}

async fn next_event(events: &mut tonic::Streaming<FleetEvent>) -> FleetEvent {
    tokio::time::timeout(TIMEOUT, events.message())
        .await
        .expect("event in time")
        .expect("stream ok")
        .expect("stream open")
}

const PUSHES_APPLIED: &str = "hav_coordinator_pushes_total{outcome=\"applied\"}";
const PUSHES_REJECTED: &str = "hav_coordinator_pushes_total{outcome=\"rejected\"}";
const NODES_APPLIED: &str = "hav_coordinator_node_applies_total{outcome=\"applied\"}";
const DRAINS_REFUSED: &str = "hav_coordinator_drains_total{action=\"drain\",outcome=\"refused\"}";
const CONNECTED: &str = "hav_coordinator_connected_agents";
const WATCHERS: &str = "hav_coordinator_watchers";
const EVENTS: &str = "hav_coordinator_events_total";

#[tokio::test]
async fn metrics_follow_agents_watchers_pushes_and_drains() {
    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start_with(&pki, data.path(), |config| {
        config.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    })
    .await;
    let metrics_at = coordinator.metrics_addr.expect("metrics served");

    let before = scrape(metrics_at).await;
    assert_eq!(get(&before, CONNECTED), 0.0);
    assert_eq!(get(&before, WATCHERS), 0.0);
    assert_eq!(get(&before, PUSHES_APPLIED), 0.0);
    assert_eq!(get(&before, NODES_APPLIED), 0.0);
    assert!(
        before
            .keys()
            .any(|k| k.starts_with("hav_coordinator_build_info{version="))
    );

    // A watcher is subscribed once its call returned.
    let viewer = pki.operator(&coordinator, "vera", Role::Viewer);
    let mut as_viewer = client::connect(&viewer).await.unwrap();
    let mut events = as_viewer
        .watch_events(WatchEventsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(get(&scrape(metrics_at).await, WATCHERS), 1.0);

    // An agent is registered before it is welcomed.
    let mut agent = pki.agent(&coordinator, "lb-1", "lb-1");
    await_link(&mut agent, |s| *s == LinkState::Connected).await;
    let presence = next_event(&mut events).await;
    assert!(matches!(presence.kind, Some(fleet_event::Kind::Presence(p)) if p.connected));
    let connected = scrape(metrics_at).await;
    assert_eq!(get(&connected, CONNECTED), 1.0);
    assert_eq!(get(&connected, EVENTS), 1.0, "the presence event");

    // A viewer's push is refused; an operator's is applied by the agent.
    let refused = as_viewer.push_config(push_request("lb-1")).await;
    assert_eq!(refused.unwrap_err().code(), tonic::Code::PermissionDenied);
    let operator = pki.operator(&coordinator, "olga", Role::Operator);
    let mut as_operator = client::connect(&operator).await.unwrap();
    let (pushed, ()) = tokio::join!(as_operator.push_config(push_request("lb-1")), async {
        let pending = next_command(&mut agent).await;
        assert!(matches!(pending.command, Command::ApplyConfig { .. }));
        pending.ack(Ok::<(), String>(()));
    });
    let pushed = pushed.unwrap().into_inner();
    assert_eq!(pushed.nodes[0].outcome, ApplyOutcome::Applied as i32);
    let after_push = scrape(metrics_at).await;
    assert_eq!(get(&after_push, PUSHES_APPLIED), 1.0);
    assert_eq!(get(&after_push, PUSHES_REJECTED), 1.0);
    assert_eq!(get(&after_push, NODES_APPLIED), 1.0);

    // The agent refuses a drain.
    let (drained, ()) = tokio::join!(
        as_operator.drain(DrainRequest {
            node: "lb-1".into(),
            undrain: false,
            ..DrainRequest::default()
        }),
        async {
            let pending = next_command(&mut agent).await;
            assert!(matches!(pending.command, Command::Drain));
            pending.ack(Err("refused by the test"));
        }
    );
    assert!(!drained.unwrap().into_inner().ok);
    assert_eq!(get(&scrape(metrics_at).await, DRAINS_REFUSED), 1.0);

    // The agent goes: unregistered before its absence is announced.
    drop(agent);
    let gone = next_event(&mut events).await;
    assert!(matches!(gone.kind, Some(fleet_event::Kind::Presence(p)) if !p.connected));
    let after = scrape(metrics_at).await;
    assert_eq!(get(&after, CONNECTED), 0.0);
    assert_eq!(get(&after, EVENTS), 2.0);

    drop(events);
    coordinator.shutdown().await.unwrap();
    assert!(
        tokio::net::TcpStream::connect(metrics_at).await.is_err(),
        "metrics stop with the coordinator"
    );
}

/// Waits on a blocking thread (the collector's wait blocks) so the runtime keeps serving.
async fn wait_span(
    mut collector: Collector,
    what: &'static str,
    wanted: impl Fn(&Exported) -> bool + Send + 'static,
) -> (Collector, Exported) {
    tokio::task::spawn_blocking(move || {
        let found = collector.wait_for(what, wanted);
        (collector, found)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_push_and_a_drain_are_traced_into_the_agent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint: OtlpEndpoint = format!("http://{}", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let collector = Collector::serve(listener);
    let pipeline = trace::init(&endpoint, SamplingRatio::ALWAYS, "coord-test").unwrap();
    // This test's runtime runs on this thread only: coordinator, agent link and the daemon side
    // below all record into this subscriber.
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(pipeline.tracer()));
    let _default = tracing::subscriber::set_default(subscriber);

    let pki = Pki::new();
    let data = tempfile::tempdir().unwrap();
    let coordinator = start_with(&pki, data.path(), |_| {}).await;
    let mut agent = pki.agent(&coordinator, "lb-1", "lb-1");
    await_link(&mut agent, |s| *s == LinkState::Connected).await;
    let operator = pki.operator(&coordinator, "olga", Role::Operator);
    let mut fleet = client::connect(&operator).await.unwrap();

    // The daemon side carries each command out inside its `agent.command` span.
    let mut contexts = Vec::new();
    let (pushed, ()) = tokio::join!(fleet.push_config(push_request("lb-1")), async {
        let pending = next_command(&mut agent).await;
        contexts.push(pending.trace_context.clone());
        let span = pending.span();
        span.in_scope(|| tracing::info!("applying"));
        pending.ack(Ok::<(), String>(()));
    });
    assert_eq!(
        pushed.unwrap().into_inner().nodes[0].outcome,
        ApplyOutcome::Applied as i32
    );
    let (drained, ()) = tokio::join!(
        fleet.drain(DrainRequest {
            node: "lb-1".into(),
            undrain: false,
            ..DrainRequest::default()
        }),
        async {
            let pending = next_command(&mut agent).await;
            contexts.push(pending.trace_context.clone());
            let span = pending.span();
            span.in_scope(|| tracing::info!("draining"));
            pending.ack(Ok::<(), String>(()));
        }
    );
    assert!(drained.unwrap().into_inner().ok);
    for context in &contexts {
        let traceparent = &context["traceparent"];
        assert!(
            traceparent.starts_with("00-") && traceparent.ends_with("-01"),
            "a sampled W3C traceparent: {traceparent}"
        );
    }
    drop(agent);
    coordinator.shutdown().await.unwrap();
    // Flushes every span recorded so far to the collector.
    pipeline.shutdown().await;

    let (collector, push) =
        wait_span(collector, "fleet.push", |s| s.span.name == "fleet.push").await;
    assert!(push.span.parent_span_id.is_empty(), "a root span");
    assert_eq!(push.service, "hav-coordinator");
    assert_eq!(push.string("fleet.operator"), "olga");
    assert_eq!(push.int("fleet.version"), 1);
    assert_eq!(push.int("fleet.nodes"), 1);
    assert!(!push.bool("fleet.dry_run"));
    assert_eq!(push.string("fleet.outcome"), "applied");
    let trace_hex = hex(&push.span.trace_id);
    assert!(contexts[0]["traceparent"].contains(&trace_hex));

    let root = push.clone();
    let (collector, pair) = wait_span(collector, "fleet.apply_pair under fleet.push", move |s| {
        s.span.name == "fleet.apply_pair" && s.is_child_of(&root)
    })
    .await;
    assert_eq!(pair.string("fleet.nodes"), "lb-1");
    let parent = pair.clone();
    let (collector, node) = wait_span(
        collector,
        "fleet.apply_node under fleet.apply_pair",
        move |s| s.span.name == "fleet.apply_node" && s.is_child_of(&parent),
    )
    .await;
    assert_eq!(node.string("fleet.node"), "lb-1");
    assert_eq!(node.int("fleet.version"), 1);
    assert_eq!(node.string("fleet.outcome"), "applied");
    let parent = node.clone();
    let (collector, applied) = wait_span(
        collector,
        "agent.command under fleet.apply_node",
        move |s| s.span.name == "agent.command" && s.is_child_of(&parent),
    )
    .await;
    assert_eq!(applied.string("command.kind"), "apply_config");

    let (collector, drain) =
        wait_span(collector, "fleet.drain", |s| s.span.name == "fleet.drain").await;
    assert_eq!(drain.string("fleet.node"), "lb-1");
    assert_eq!(drain.string("fleet.outcome"), "ok");
    assert_ne!(
        drain.span.trace_id, push.span.trace_id,
        "each operation is its own trace"
    );
    let parent = drain.clone();
    let (_collector, drained) = wait_span(collector, "agent.command under fleet.drain", move |s| {
        s.span.name == "agent.command" && s.is_child_of(&parent)
    })
    .await;
    assert_eq!(drained.string("command.kind"), "drain");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
