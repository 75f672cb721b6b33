//! Simulated agents and the watching operator. A simulated agent speaks the real agent protocol
//! over its own mTLS connection with its own certificate (as `hav_agent::control` does: Hello and
//! a snapshot, then Welcome), acknowledges every command at once and emits transition events on
//! request; it runs no VRRP. Given several coordinators it dials them as the real link does: a
//! refused or failed dial moves to the next in the list after `Backoff::short_delay`, the delay
//! growing (`Backoff::next_delay`) once per round through the list; agent `i` starts at
//! coordinator `i % count`, so agents spread when every coordinator accepts them. The watcher is
//! a `WatchEvents` stream that timestamps what arrives.
//!
//! Event tags travel in `Transition.instance`: `ready` (sent after the snapshot, so its arrival
//! at the watcher proves the coordinator has handled the snapshot) and `seq-<n>` (fan-out probe
//! `n`, whose send instant is recorded on this side: one process, one monotonic clock).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hav_agent::control::Backoff;
use hav_proto::transport;
use hav_proto::v1::agent_message::Body as AgentBody;
use hav_proto::v1::agent_service_client::AgentServiceClient;
use hav_proto::v1::coordinator_message::Body as CoordinatorBody;
use hav_proto::v1::fleet_service_client::FleetServiceClient;
use hav_proto::v1::{
    AgentMessage, CommandAck, Event, Hello, InstanceState, MAX_MESSAGE_BYTES, PROTOCOL_VERSION,
    StateSnapshot, Transition, VrrpState, WatchEventsRequest, event, fleet_event,
};
use rustls::ClientConfig;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::pki::agent_name;

/// Acknowledgements sent by all agents, for the push phase.
#[derive(Debug, Default)]
pub struct AckLog {
    pub count: AtomicUsize,
    /// Nanoseconds after `epoch` of the latest ack sent.
    pub last_ns: AtomicU64,
}

/// What every simulated agent dials with.
pub struct Dialer {
    /// The coordinators' addresses, in the order every agent's list has them.
    pub coordinators: Vec<String>,
    /// Dials in progress at once (held for one dial, not across the delay after a refusal).
    pub permits: Arc<Semaphore>,
    pub acks: Arc<AckLog>,
    /// The instant `AckLog::last_ns` counts from.
    pub epoch: Instant,
    /// The reason of the first dial refused or failed, for the log.
    pub first_refusal: std::sync::Mutex<Option<String>>,
}

/// Where an agent's dialling starts.
#[derive(Debug, Clone, Copy)]
pub struct DialFrom {
    /// Index in `Dialer::coordinators` of the first one dialled.
    pub first: usize,
    /// Dials that already failed in this round through the list (1 after a lost session, as
    /// the real link counts it).
    pub failed_in_round: usize,
}

/// A simulated agent just welcomed.
pub struct Connected {
    pub agent: Agent,
    /// From the first dial to the Welcome, refusals and delays included.
    pub latency: Duration,
    /// Dials refused or failed before the one welcomed.
    pub refused: usize,
}

/// A connected simulated agent.
pub struct Agent {
    index: usize,
    /// Index in `Dialer::coordinators` of the coordinator that welcomed it.
    pub coordinator: usize,
    out: mpsc::Sender<AgentMessage>,
    task: JoinHandle<()>,
}

impl Agent {
    /// Connects as agent `index` running `config_version`, dialling the coordinators from
    /// `from` on until one welcomes it (the caller bounds the time); then sends the `ready`
    /// event.
    pub async fn connect(
        dialer: &Dialer,
        index: usize,
        config_version: u64,
        tls: Arc<ClientConfig>,
        from: DialFrom,
    ) -> anyhow::Result<Connected> {
        let started = Instant::now();
        let count = dialer.coordinators.len().max(1);
        let mut backoff = Backoff::default();
        let mut current = from.first % count;
        let mut failed_in_round = from.failed_in_round;
        let mut refused = 0;
        loop {
            let attempt = {
                let _permit = dialer.permits.acquire().await?;
                Agent::session(dialer, current, index, config_version, tls.clone()).await
            };
            match attempt {
                Ok(agent) => {
                    return Ok(Connected {
                        agent,
                        latency: started.elapsed(),
                        refused,
                    });
                }
                // Dialled again until welcomed: the caller's deadline ends the loop.
                Err(e) => {
                    refused += 1;
                    if let Ok(mut first) = dialer.first_refusal.lock() {
                        first.get_or_insert_with(|| {
                            format!(
                                "{}: {}: {e:#}",
                                agent_name(index),
                                dialer.coordinators[current]
                            )
                        });
                    }
                }
            }
            failed_in_round += 1;
            let retry_in = if failed_in_round < count {
                backoff.short_delay()
            } else {
                failed_in_round = 0;
                backoff.next_delay()
            };
            current = (current + 1) % count;
            tokio::time::sleep(retry_in).await;
        }
    }

    /// One dial of coordinator `coordinator`: TLS, Hello + snapshot, Welcome, then `ready`.
    async fn session(
        dialer: &Dialer,
        coordinator: usize,
        index: usize,
        config_version: u64,
        tls: Arc<ClientConfig>,
    ) -> anyhow::Result<Agent> {
        let address = &dialer.coordinators[coordinator];
        let channel = transport::connect(address, tls).await?;
        let mut client = AgentServiceClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let (out, out_rx) = mpsc::channel(64);
        let name = agent_name(index);
        let hello = Hello {
            software_version: "fleet-load".into(),
            protocol_version: PROTOCOL_VERSION,
            capabilities: vec!["apply-config".into()],
            node_name: name.clone(),
            config_version,
        };
        // Fresh channel with room for 64: these cannot fail.
        let _ = out.try_send(body(AgentBody::Hello(hello)));
        let _ = out.try_send(body(AgentBody::Snapshot(snapshot(index))));
        let mut inbound = client
            .connect(ReceiverStream::new(out_rx))
            .await?
            .into_inner();
        match inbound.message().await? {
            Some(message) if matches!(message.body, Some(CoordinatorBody::Welcome(_))) => {}
            other => anyhow::bail!("{name}: expected Welcome, got {other:?}"),
        }
        out.send(transition("ready".into())).await?;
        let replies = out.clone();
        let (acks, epoch) = (dialer.acks.clone(), dialer.epoch);
        let task = tokio::spawn(async move {
            // Keeps the client (and its connection) alive as long as the stream.
            let _client = client;
            while let Ok(Some(message)) = inbound.message().await {
                let Some(CoordinatorBody::Command(command)) = message.body else {
                    continue;
                };
                let ack = CommandAck {
                    id: command.id,
                    ok: true,
                    error: String::new(),
                };
                if replies.send(body(AgentBody::Ack(ack))).await.is_err() {
                    return;
                }
                acks.last_ns
                    .fetch_max(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
                acks.count.fetch_add(1, Ordering::Relaxed);
            }
        });
        Ok(Agent {
            index,
            coordinator,
            out,
            task,
        })
    }

    /// The simulated node's index (its name is `agent_name(index)`).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Returns when the agent's stream has ended (its coordinator closed it or died).
    pub async fn closed(&mut self) {
        if !self.task.is_finished() {
            let _ = (&mut self.task).await;
        }
    }

    /// After its coordinator went away: waits for the stream's end, then dials again from the
    /// next coordinator in the list after `Backoff::short_delay`, as the real link does.
    pub async fn rejoin(
        mut self,
        dialer: &Dialer,
        config_version: u64,
        tls: Arc<ClientConfig>,
    ) -> anyhow::Result<Connected> {
        self.closed().await;
        let (index, next) = (self.index, self.coordinator + 1);
        drop(self);
        tokio::time::sleep(Backoff::default().short_delay()).await;
        let from = DialFrom {
            first: next,
            failed_in_round: 1,
        };
        Agent::connect(dialer, index, config_version, tls, from).await
    }

    /// Emits fan-out probe `seq` as a transition event, preceded by the new snapshot if
    /// `with_snapshot` (as a real agent reports a transition); false if the stream is gone or
    /// full.
    pub fn emit(&self, seq: usize, with_snapshot: bool) -> bool {
        if with_snapshot
            && self
                .out
                .try_send(body(AgentBody::Snapshot(snapshot(self.index + seq))))
                .is_err()
        {
            return false;
        }
        self.out.try_send(transition(format!("seq-{seq}"))).is_ok()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What the watcher saw, as it arrived.
#[derive(Debug)]
pub enum Seen {
    Ready,
    Probe(usize, Instant),
    /// The coordinator dropped this many events for this watcher.
    Lagged(u64),
}

/// Opens a `WatchEvents` stream for every node; the subscription exists when this returns.
pub async fn watch(
    fleet: &mut FleetServiceClient<Channel>,
) -> anyhow::Result<(mpsc::UnboundedReceiver<Seen>, JoinHandle<()>)> {
    let mut stream = fleet
        .watch_events(WatchEventsRequest { nodes: Vec::new() })
        .await?
        .into_inner();
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let event = match stream.message().await {
                Ok(Some(event)) => event,
                Ok(None) => {
                    eprintln!("watcher: the coordinator ended the WatchEvents stream");
                    return;
                }
                Err(status) => {
                    eprintln!("watcher: {}", transport::explain_status(&status));
                    return;
                }
            };
            let now = Instant::now();
            let seen = match event.kind {
                Some(fleet_event::Kind::Lagged(missed)) => Seen::Lagged(missed),
                Some(fleet_event::Kind::Agent(Event {
                    kind: Some(event::Kind::Transition(t)),
                    ..
                })) => match t.instance.strip_prefix("seq-") {
                    Some(seq) => match seq.parse() {
                        Ok(seq) => Seen::Probe(seq, now),
                        Err(_) => continue,
                    },
                    None if t.instance == "ready" => Seen::Ready,
                    None => continue,
                },
                _ => continue,
            };
            if tx.send(seen).is_err() {
                return;
            }
        }
    });
    Ok((rx, task))
}

fn body(body: AgentBody) -> AgentMessage {
    AgentMessage { body: Some(body) }
}

fn transition(tag: String) -> AgentMessage {
    body(AgentBody::Event(Event {
        unix_ms: hav_coordinator::unix_ms(),
        kind: Some(event::Kind::Transition(Transition {
            instance: tag,
            from: VrrpState::Backup as i32,
            to: VrrpState::Master as i32,
            cause: "fleet-load probe".into(),
        })),
    }))
}

/// A one-instance snapshot, the size a small proxy pair reports: node `2p` masters its pair's
/// VIP (the one `node_config` gives pair `p`), node `2p + 1` backs it up.
fn snapshot(index: usize) -> StateSnapshot {
    let master = index.is_multiple_of(2);
    let pair = index / 2;
    StateSnapshot {
        config_version: 0,
        instances: vec![InstanceState {
            name: "VI_1".into(),
            vrid: (index / 2 % 255 + 1) as u32,
            state: if master {
                VrrpState::Master
            } else {
                VrrpState::Backup
            } as i32,
            effective_priority: if master { 150 } else { 100 },
            configured_priority: if master { 150 } else { 100 },
            vips_held: if master {
                vec![format!("2001:db8:{pair:x}::100/64")]
            } else {
                Vec::new()
            },
            interface: "eth0".into(),
            priority_override: None,
            advert_interval_ms: 0,
            draining_connections: None,
        }],
        drained: false,
        unix_ms: hav_coordinator::unix_ms(),
    }
}
